from tritonscale.cli import main

raise SystemExit(main())
