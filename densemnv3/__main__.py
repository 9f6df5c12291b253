"""``python -m densemnv3 COMMAND ...`` (and ``torchrun -m densemnv3 train CONFIG``)."""

from densemnv3.cli import run

if __name__ == "__main__":
    run()
