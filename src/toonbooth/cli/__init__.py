"""Command line (typer): every studio runnable from the shell."""
