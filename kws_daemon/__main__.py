from kws_daemon.cli import main

raise SystemExit(main())
