from devpush.cli import main

main()
