from devpush.entry import main

main()
