"""tritonscale: a Kubernetes operator running Triton fleets against latency and cost SLOs."""

__version__ = "0.1.0"
