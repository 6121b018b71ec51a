"""Exit codes, one home: scripts and CI branch on them."""

EXIT_OK = 0
EXIT_PARITY_FAILED = 1  # a parity check or an accuracy target failed
EXIT_BAD_INPUT = 2  # bad input or a failing environment: one line naming the file
EXIT_INTERNAL = 3  # a bug in foldkit: one line, the traceback with FOLDKIT_DEBUG=1
EXIT_INTERRUPTED = 130  # Ctrl-C, as shells report SIGINT

EXIT_CODES_EPILOG = (
    "exit codes: 0 success · 1 parity or an accuracy target failed · 2 bad input or environment "
    "(one line naming the file) · 3 internal error (FOLDKIT_DEBUG=1 shows the traceback)"
)
