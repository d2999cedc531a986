from loraforge.cli import run

run()
