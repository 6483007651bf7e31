from mididdsp.cli import main

raise SystemExit(main())
