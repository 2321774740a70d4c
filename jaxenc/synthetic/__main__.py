"""``python -m jaxenc.synthetic ROOT [--preset tiny|demo|full] [--seed N] [--quiet]``."""

from jaxenc.synthetic.writer import main

raise SystemExit(main())
