from presenced.cli import main

raise SystemExit(main())
