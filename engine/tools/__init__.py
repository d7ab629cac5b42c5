"""What an operator or engineer runs: the ``emguard`` CLI, ``serve`` and ``demo`` assembly,
broker and deploy configuration generators, the compiled-build switch and test fakes.
"""
