"""The `g4seg` command (`g4seg predict ...`, `g4seg report ...`); see `run/cli.py`."""


def main(argv: list[str] | None = None) -> None:
    from .run.cli import main as run

    run(argv)


if __name__ == "__main__":
    main()
