"""`python -m textvae ...` (also what `torchrun -m textvae train ...` runs)."""

from textvae.cli import main

if __name__ == "__main__":
    main()
