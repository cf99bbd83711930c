"""The API identity of tritonscale, spelled once: the CRD's group, version, kind and
plural, and the labels/annotations the operator puts on what it creates.

Every module (the CRD loader, spec parsing, rendering, the kube adapter, the Kopf
handlers) imports these names from here.
"""

from __future__ import annotations

GROUP = "tritonscale.io"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "ScaledModel"
PLURAL = "scaledmodels"
CRD_NAME = f"{PLURAL}.{GROUP}"

# The field manager of server-side apply and the value of app.kubernetes.io/managed-by.
MANAGER = "tritonscale"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"

# Labels on every Deployment, pod and Service of a ScaledModel.
LABEL_SM = f"{GROUP}/scaledmodel"
LABEL_VARIANT = f"{GROUP}/variant"
LABEL_POOL = f"{GROUP}/pool"
# Hash of a Deployment's desired pod template (a change means roll it).
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
ANNOTATION_MODEL = f"{GROUP}/model"
