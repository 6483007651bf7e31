# The two commands a newcomer types: `make test` and `make demo`. Each installs what it needs first.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The render's kernels compiled ahead of time (mididdsp/native.py): a render then starts without numba's JIT.
# Without a C compiler the build fails and renders compile the same kernels with the JIT (same bits, slower start).
NATIVE := mididdsp/_render_kernels.json
NATIVE_SOURCES := mididdsp/native.py mididdsp/dsp/_numba_kernels.py mididdsp/dsp/kernels.py \
    mididdsp/synthesis/_numba_kernels.py mididdsp/synthesis/kernels.py mididdsp/expression/_prior_numba.py

.PHONY: install test demo bench clean

install: $(STAMP) $(NATIVE)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

$(NATIVE): $(STAMP) $(NATIVE_SOURCES)
	$(PY) -m mididdsp.native || echo "continuing: renders will compile their kernels with numba's JIT"

test: install
	OMP_NUM_THREADS=2 $(PY) -m pytest

demo: install
	$(PY) -m mididdsp demo -o demo.wav

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache mididdsp/_render_kernels*

# ---- The shipped models: data the project makes itself, then the documented training commands. -----------------
# Each step is resumable: rerunning continues where it stopped (corpus and prepare skip finished files, training
# resumes from its last checkpoint).
DATA := data
# The 13 instruments MIDI-DDSP ships, each played by two General MIDI SoundFonts in turn (Debian packages
# fluid-soundfont-gm and musescore-general-soundfont-lossless). The csound bank (csound-soundfont) is held out
# of training to measure generalisation; TimGM6mb (timgm6mb-soundfont) is reserved for evaluation.
SF2 := /usr/share/sounds/sf2
INSTRUMENTS := violin,viola,cello,contrabass,flute,oboe,clarinet,saxophone,bassoon,trumpet,horn,trombone,tuba
TRAIN_SOUNDFONTS := $(SF2)/FluidR3_GM.sf2,$(SF2)/MuseScore_General_Full.sf2
HELDOUT_SOUNDFONT := $(SF2)/sf_GMbank.sf2
EVAL_SOUNDFONT := $(SF2)/TimGM6mb.sf2
$(DATA)/corpus/manifest.json: | install
	$(PY) -m mididdsp corpus --out $(DATA)/corpus --instruments $(INSTRUMENTS) --minutes 6 --seed 0 \
	    --soundfont $(TRAIN_SOUNDFONTS) --jobs 2

$(DATA)/prepared/manifest.json: $(DATA)/corpus/manifest.json
	$(PY) -m mididdsp prepare $(DATA)/corpus --out $(DATA)/prepared --seed 0

.PHONY: data data-heldout model-autoencoder model-synthesis-coder model-midi eval-autoencoder eval-expression \
        eval-midi eval-heldout data-first
data: $(DATA)/prepared/manifest.json

# Evaluation corpora, never trained on: other melodies (seed 1) played by the held-out SoundFonts.
$(DATA)/heldout/%/manifest.json: | install
	$(PY) -m mididdsp corpus --out $(DATA)/heldout/$* --instruments $(INSTRUMENTS) --minutes 1 --seed 1 \
	    --soundfont $(SF2)/$*.sf2 --jobs 2
	$(PY) -m mididdsp prepare $(DATA)/heldout/$* --out $(DATA)/heldout/$*_prepared --seed 0 --valid 0 --test 0
# A real (non-SoundFont) recording: music21's test_audio.wav, its notes transcribed from its f0, as each instrument.
$(DATA)/heldout/real_music21/manifest.json: | install
	$(PY) benchmarks/real_recording_corpus.py -o $(DATA)/heldout/real_music21
data-heldout: $(DATA)/heldout/sf_GMbank/manifest.json $(DATA)/heldout/TimGM6mb/manifest.json \
              $(DATA)/heldout/real_music21/manifest.json

# The first models' corpus (4 instruments, FluidR3 only): the training-SoundFont comparisons in docs/RESULTS.md
# score its 8 valid + test recordings.
data_first/prepared/manifest.json: | install
	$(PY) -m mididdsp corpus --out data_first/corpus --instruments violin,cello,flute,trumpet --minutes 6 --seed 0 \
	    --soundfont $(SF2)/FluidR3_GM.sf2 --jobs 2
	$(PY) -m mididdsp prepare data_first/corpus --out data_first/prepared --seed 0
data-first: data_first/prepared/manifest.json

# Two stages: the packaged recipe (6000 steps), then 8000 more from its weights at a lower rate (train.init_from).
# One 6000-step run left the 13 instruments x 2 SoundFonts at spectral 6.69 on the first corpus's FluidR3
# recordings, where the same run on 4 instruments reached 5.71; the second stage brings it to 5.68 (docs/RESULTS.md).
model-autoencoder: install data
	$(PY) -m mididdsp train autoencoder_tiny data.dir=$(DATA)/prepared --run-dir runs/autoencoder_tiny
	$(PY) -m mididdsp train autoencoder_tiny data.dir=$(DATA)/prepared --run-dir runs/autoencoder_tiny_more \
	    train.init_from=runs/autoencoder_tiny/model train.lr=3e-4 train.max_steps=8000 train.lr_decay_steps=4000
	$(PY) -m mididdsp export runs/autoencoder_tiny_more -o mididdsp/pretrained/autoencoder
	$(PY) -m mididdsp calibrate mididdsp/pretrained/autoencoder --data $(DATA)/prepared

# The same two stages as the autoencoder's: the second took the spectral loss on the first corpus's FluidR3
# recordings from 5.76 to 5.07 (the first coder's 5.24) and on sf_GMbank from 7.28 to 6.52 (docs/RESULTS.md).
model-synthesis-coder: install data
	$(PY) -m mididdsp train synthesis_coder data.dir=$(DATA)/prepared --run-dir runs/synthesis_coder
	$(PY) -m mididdsp train synthesis_coder data.dir=$(DATA)/prepared --run-dir runs/synthesis_coder_more \
	    train.init_from=runs/synthesis_coder/model train.lr=3e-4 train.max_steps=4000 train.lr_decay_steps=4000
	$(PY) -m mididdsp export runs/synthesis_coder_more -o mididdsp/pretrained/synthesis_coder
	$(PY) -m mididdsp calibrate mididdsp/pretrained/synthesis_coder --data $(DATA)/prepared

eval-autoencoder: install data
	$(PY) benchmarks/eval_autoencoder.py mididdsp/pretrained/autoencoder mididdsp/pretrained/synthesis_coder --data $(DATA)/prepared

# Expression extraction against the corpus's ground truth: the performer's applied parameters, then the neutral
# re-render reference (see benchmarks/eval_expression.py and docs/RESULTS.md).
eval-expression: install data
	$(PY) benchmarks/eval_expression.py mididdsp/pretrained/synthesis_coder $(DATA)/corpus
	$(PY) benchmarks/eval_expression.py mididdsp/pretrained/synthesis_coder $(DATA)/corpus --reference neutral
	$(PY) benchmarks/eval_expression.py mididdsp/pretrained/synthesis_coder $(DATA)/corpus --reference written

# The default MIDI model (mididdsp/pretrained/midi): the shipped synthesis coder's controls and note expression
# cached once (teacher), then the synthesis generator and the expression prior, each exported into the model, and
# the prior's velocity -> level fit on the teacher's recordings (how loud a track plays from its velocities:
# mididdsp/expression/levels.py). Every step resumes where it stopped. Measured times are in docs/RESULTS.md.
MIDI_MODEL := mididdsp/pretrained/midi
model-midi: install data
	$(PY) -m mididdsp teacher $(DATA)/prepared
	$(PY) -m mididdsp train synthesis_generator data.dir=$(DATA)/prepared --run-dir runs/synthesis_generator
	$(PY) -m mididdsp train expression_prior data.dir=$(DATA)/prepared --run-dir runs/expression_prior
	$(PY) -m mididdsp export runs/synthesis_generator -o $(MIDI_MODEL)/generator
	$(PY) -m mididdsp export runs/expression_prior -o $(MIDI_MODEL)/prior
	$(PY) -m mididdsp calibrate $(MIDI_MODEL)/prior --data $(DATA)/prepared

# The MIDI model's figures (docs/RESULTS.md): control fidelity, physical honesty and reconstruction of the
# generator; the prior against the extracted expression.
eval-midi: install data
	$(PY) -m mididdsp eval controls $(MIDI_MODEL) --data $(DATA)/prepared --json runs/eval_controls.json
	$(PY) -m mididdsp eval controls $(MIDI_MODEL) --data $(DATA)/prepared --extractor analysis --json runs/eval_controls_analysis.json
	$(PY) benchmarks/eval_render.py --data $(DATA)/prepared --json runs/eval_render.json
	$(PY) -m mididdsp eval prior $(MIDI_MODEL) --data $(DATA)/prepared --split test --json runs/eval_prior_test.json
	$(PY) -m mididdsp eval prior $(MIDI_MODEL) --data $(DATA)/prepared --split valid --json runs/eval_prior_valid.json

# Generalisation (issue 13): extraction and resynthesis on SoundFonts no model was trained on. The held-out
# folders are prepared with every recording in the "train" split (the name only: nothing trains on them).
HELDOUT := sf_GMbank TimGM6mb
eval-heldout: install data-heldout
	for sf in $(HELDOUT); do \
	  $(PY) benchmarks/eval_expression.py mididdsp/pretrained/synthesis_coder $(DATA)/heldout/$$sf \
	      --prepared $(DATA)/heldout/$${sf}_prepared --split all --reference neutral || exit 1; \
	  $(PY) benchmarks/eval_expression.py - $(DATA)/heldout/$$sf --controls analysis \
	      --prepared $(DATA)/heldout/$${sf}_prepared --split all --reference neutral || exit 1; \
	  $(PY) benchmarks/eval_autoencoder.py mididdsp/pretrained/autoencoder mididdsp/pretrained/synthesis_coder \
	      --data $(DATA)/heldout/$${sf}_prepared --splits train || exit 1; \
	done
