from digits_cli.cli import app

app(prog_name="digits")
