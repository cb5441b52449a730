"""The TAM-NAS search space: encoding, blocks, ModelSpace, parameter table, LegoNet."""

import warnings

# Importing nni.nas.nn.pytorch with this torch warns that some torch classes are "not a
# nn.Module" (docs/architecture.md §8): harmless, and it would bury every CLI's and trial's output.
warnings.filterwarnings("ignore", message=r".* is found to be not a nn\.Module", category=RuntimeWarning)
