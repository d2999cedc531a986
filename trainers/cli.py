import typer

data_app = typer.Typer(help="Build dataset snapshots.", no_args_is_help=True)
base_app = typer.Typer(help="Base models.", no_args_is_help=True)
train_app = typer.Typer(help="Train adapters.", no_args_is_help=True)
