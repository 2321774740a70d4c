"""The Huth-lab timing conventions for ds003020, as named defaults.

These numbers define how stimulus time maps onto response rows; the reader, the synthetic twin
and the alignment functions all take them from here so the three can never disagree.
This module imports nothing from jaxenc.

Conventions
-----------
For a story with ``respdict[story] = n_acquired`` TRs, the scanner triggers are simulated as
``n_acquired - PAD`` triggers at ``t_i = TR * i - SOUND_START`` seconds relative to sound onset,
and the target time of TR ``i`` is its centre ``t_i + TR / 2``. Features are interpolated to
those centres, then rows ``[TRIM_START : -TRIM_END]`` are kept, which leaves exactly the
``n_acquired - 20`` rows stored in the story's hf5 file.
"""

# Repetition time of the scanner, in seconds.
TR = 2.0
# Sound onset relative to the first simulated trigger, in seconds.
SOUND_START = 10.0
# TRs in respdict beyond the simulated triggers (respdict counts 5 more than are simulated).
PAD = 5
# Rows dropped at the start of the TR grid (scanner warm-up and the silence before the story).
TRIM_START = 10
# Rows dropped at the end of the TR grid.
TRIM_END = 5
# Rows of an hf5 file = respdict[story] - RESPDICT_OFFSET.
RESPDICT_OFFSET = PAD + TRIM_START + TRIM_END
# Delays of the FIR model, in TRs (about 2, 4, 6 and 8 s).
DELAYS = (1, 2, 3, 4)
# Lanczos window (lobes) of the downsampling filter.
LANCZOS_WINDOW = 3
# Held-out test story, heard several times by every subject.
TEST_STORY = "wheretheressmoke"
# Sample rate of the stimulus wav files, in Hz.
AUDIO_RATE = 44100
# Channels of the stimulus wav files.
AUDIO_CHANNELS = 2
# Labels of the TextGrid tiers that mark silence or non-speech events rather than words.
NON_SPEECH_LABELS = frozenset(
    {"", "sp", "sil", "sentence_start", "sentence_end", "br", "lg", "ls", "ns", "cg", "ig"}
)
