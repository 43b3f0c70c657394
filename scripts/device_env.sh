# Sourced by the scripts/device_*.sh calls on a lent GPU machine: installs the carried wheels of `datasets` and
# the packages it needs that the machine lacks (.gpu/whl, from scripts/build_device_bundle.sh), puts them and the
# repository on PYTHONPATH, and prints what the runs will use.
export PYTHONUNBUFFERED=1
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .gpu/whl/*.whl
export PYTHONPATH=/tmp/site:$PWD
python3 -c "import datasets, pyarrow, torch; print('datasets', datasets.__version__, 'pyarrow', pyarrow.__version__,
    'torch', torch.__version__, torch.cuda.get_device_name())"
