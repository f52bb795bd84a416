from sizepenalty.cli import main

raise SystemExit(main())
