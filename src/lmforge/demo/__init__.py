"""`lmforge demo`: the transfer-learning experiment on text every Python installation has."""
