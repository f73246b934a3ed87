from . import main

main(prog_name="llvm-batch")
