"""User-facing errors: the CLI prints their message as one line and exits with code 2."""


class UserError(ValueError):
    """Bad input from the user (unknown name, bad file, unreachable server, missing data)."""


def unknown_choice(kind: str, value: str, choices) -> UserError:
    return UserError(f"unknown {kind} {value!r}; choose one of: {', '.join(sorted(choices))}")
