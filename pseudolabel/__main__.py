from pseudolabel.cli import app

app(prog_name="pseudolabel")
