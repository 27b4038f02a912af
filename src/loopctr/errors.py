"""User-facing errors: the CLI prints these as one message and exits non-zero, without a traceback."""


class UserError(Exception):
    """Bad input, a bad config or a bad command line: something the user can fix."""


def located(path, line: int | None = None, column: str | None = None) -> str:
    """`file:line, column 'x'` prefix for error messages."""
    where = str(path)
    if line is not None:
        where += f":{line}"
    if column is not None:
        where += f", column '{column}'"
    return where
