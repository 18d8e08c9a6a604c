from sidegate.xds.main import command_line

command_line()
