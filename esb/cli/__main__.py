"""``python -m esb.cli``, as the demo and the test processes start esb."""

from esb.cli import main

if __name__ == "__main__":
    main()
