"""The Speech Commands v2 vocabulary, in the order of MIT/ast-finetuned-speech-commands-v2's id2label."""

SPEECH_COMMANDS_V2 = (
    "backward", "bed", "bird", "cat", "dog", "down", "eight", "five", "follow", "forward", "four", "go",
    "happy", "house", "learn", "left", "marvin", "nine", "no", "off", "on", "one", "right", "seven",
    "sheila", "six", "stop", "three", "tree", "two", "up", "visual", "wow", "yes", "zero",
)  # fmt: skip

BACKGROUND = "_background_"

# ASTFeatureExtractor normalisation of the MIT Speech Commands checkpoint.
SC_MEAN = -6.845978
SC_STD = 5.5654526
