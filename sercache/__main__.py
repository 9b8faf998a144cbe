from sercache.cli import cli

cli()
