"""Fixtures of the PET tests: phantoms in memory and one short k-fold training run shared by
the learning, model-card and workflow tests (the expensive part, done once per session)."""

import numpy as np
import pytest

N_CASES = 36
# a narrow 4-block CNN3D without normalisation (the first demo network), quick to train at 12 mm;
# the bundled demo network is clinicalai.pet.train_demo.DEMO_ARCH_KWARGS
ARCH_KWARGS = {"channels": [8, 16, 16, 16], "hidden": 32, "norm": "none", "dropout": 0.0}
# the phantoms drawn on a coarse 4 mm native grid: 8x fewer voxels to simulate than scanner A
FAST_GRID = {"spacing": (4.0, 4.0, 4.0), "shape": (36, 54, 48)}
# the network grid of the test run: the study's field of view (264 x 264 x 168 mm) at 12 mm
TEST_SPACING_MM = (12.0, 12.0, 12.0)
TEST_SIZE_XYZ = (22, 22, 14)


@pytest.fixture(scope="session")
def pet_cases():
    from clinicalai.phantoms.pet import pet_case

    # balanced labels and scanners; seeds distinct from the bundled demo's data set
    return [pet_case(5000 + i, recurrence=bool(i % 2), scanner="AB"[(i // 2) % 2], **FAST_GRID) for i in range(N_CASES)]


@pytest.fixture(scope="session")
def trained(pet_cases, tmp_path_factory):
    """2-fold training of the narrow CNN3D at 12 mm on 36 phantoms (10 epochs, ~30 s on 2 cores)."""
    from clinicalai.pet.preprocess import preprocess_pet
    from clinicalai.pet.train import PetRow, TrainConfig, train_folds

    inputs = np.stack([
        preprocess_pet(c.image, brain_mask=c.brain_mask, spacing_mm=TEST_SPACING_MM, size_xyz=TEST_SIZE_XYZ).input
        for c in pet_cases
    ])
    rows = [PetRow(id=f"case{i:02d}", path=None, label=c.label, scanner=c.scanner) for i, c in enumerate(pet_cases)]
    cfg = TrainConfig(arch="cnn3d", arch_kwargs=dict(ARCH_KWARGS), folds=2, epochs=10, batch_size=4, lr=1e-3,
                      weight_decay=0.0, augment=False, spacing_mm=TEST_SPACING_MM, size_xyz=TEST_SIZE_XYZ, seed=0,
                      device="cpu", name="pet-test", synthetic_demo=True, command="pytest Testing/pet")
    out = tmp_path_factory.mktemp("pet-train") / "run"
    result = train_folds("in-memory phantoms", out, cfg, inputs=inputs, rows=rows)
    return result, out
