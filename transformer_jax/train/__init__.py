"""The training program: setup, the compiled steps, the loop and its parts."""
