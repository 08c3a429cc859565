import sys
sys.exit("cli_model: not written yet")
