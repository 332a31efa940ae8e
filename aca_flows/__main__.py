from aca_flows.cli import main

main()
