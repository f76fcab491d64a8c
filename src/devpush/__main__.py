from devpush.components import main

main()
