"""`python -m ethosu_build.artifacts_cli`: the console script `ethosu-artifacts` in this process."""

from . import main

if __name__ == "__main__":  # not when imported (the warm service imports every module ahead)
    main()
