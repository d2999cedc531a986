import typer

crawl_app = typer.Typer(help="Crawl sites into the article store.", no_args_is_help=True)
demo_site_app = typer.Typer(help="The bundled MedQuAD demo site.", no_args_is_help=True)
