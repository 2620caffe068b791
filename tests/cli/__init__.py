"""The commands (controller.cli), run in-process through ``main(argv)``."""
