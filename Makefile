PY ?= python3.11
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint demo synthetic-table2 t2-data t2-backbone t2-full t2-0pct t2-1pct t2-10pct coco-10pct coco-1pct clean

install: $(STAMP)

$(STAMP): pyproject.toml
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	# torch/torchvision pinned to the builds on this machine's disk; pyproject declares ranges.
	$(BIN)/pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest -n 2 tests

lint: $(STAMP)
	$(BIN)/ruff check pseudolabel tests benchmarks scripts

demo: $(STAMP)
	bash scripts/demo.sh

# Seed 001 Table 2 on the synthetic world: 0%, 1%, 10% masks x four weak settings + 100%.
# CondInst students (they learn on this CPU; Mask2Former stays the COCO default).
# Long (a teacher set, one generate pass and five students per fraction); every stage resumes.
# The fully supervised student and the three columns are independent targets, so
# `OMP_NUM_THREADS=1 make -j4 synthetic-table2` runs them side by side (one thread each).
# The students start from a ResNet-18 pre-trained on source-world object crops, in the place
# of seed 001's ImageNet weights (pseudolabel/pretrain/backbone.py; too large for the
# package's assets, so it is trained here first, on every core: ~20 min on 2).
T2_STEPS ?= 600
T2_ROOT ?= runs/table2
T2_SEED ?= 0
T2_PRETRAIN ?= runs/pretrain
T2_BACKBONE = $(T2_PRETRAIN)/backbone/resnet18_source.safetensors
T2 = FULL_RUN=none STUDENT=condinst SEED=$(T2_SEED) \
  STUDENT_ARGS="--steps $(T2_STEPS) --backbone-checkpoint $(T2_BACKBONE)" \
  bash scripts/pipeline.sh configs/synthetic.yaml
# The world is written once, before the parallel targets (each would otherwise generate it);
# val.json is its last file, so its presence means a complete world.
T2_WORLD = runs/data/synthetic/annotations/val.json
t2-data: $(T2_WORLD)
$(T2_WORLD): | $(STAMP)
	$(BIN)/pseudolabel synth --out runs/data/synthetic
t2-backbone: $(T2_BACKBONE)
$(T2_BACKBONE): | $(STAMP)
	env -u OMP_NUM_THREADS $(BIN)/python scripts/pretrain_synthetic_foundation.py backbone \
	  --steps 2000 --work $(T2_PRETRAIN)
t2-full: t2-data t2-backbone
	$(BIN)/pseudolabel train-student --full --config configs/synthetic.yaml --student condinst \
	  --steps $(T2_STEPS) --seed $(T2_SEED) --run-dir $(T2_ROOT)/full \
	  --backbone-checkpoint $(T2_BACKBONE)
t2-0pct: t2-data t2-backbone
	$(T2) 0 $(T2_ROOT)/0pct
t2-1pct: t2-data t2-backbone
	$(T2) 0.01 $(T2_ROOT)/1pct
t2-10pct: t2-data t2-backbone
	$(T2) 0.1 $(T2_ROOT)/10pct
synthetic-table2: t2-full t2-0pct t2-1pct t2-10pct
	$(BIN)/python scripts/table2.py $(T2_ROOT) --student condinst --seed $(T2_SEED) \
	  --out $(T2_ROOT)/table2$(if $(filter-out 0,$(T2_SEED)),-seed$(T2_SEED))

# COCO with the official checkpoints (configs/coco.yaml); checks every file first.
coco-10pct: $(STAMP)
	bash scripts/pipeline.sh configs/coco.yaml 0.1 runs/coco-10pct

coco-1pct: $(STAMP)
	FULL_RUN=runs/coco-10pct bash scripts/pipeline.sh configs/coco.yaml 0.01 runs/coco-1pct

clean:
	rm -rf $(VENV) runs
