# Sourced by scripts/test.sh: a Python venv with the pinned test tools of
# scripts/requirements.txt, under target/pyenv, re-made when that file changes.
# Exports ORGPLANE_TEST_PYTHON (the venv's interpreter) for tests that run a
# Python tool, and puts the venv's bin/ on PATH.
pyenv_dir="$PWD/target/pyenv"
pyenv_stamp="$pyenv_dir/requirements.sha256"
want=$(sha256sum scripts/requirements.txt | cut -d' ' -f1)
if [ ! -x "$pyenv_dir/bin/python" ] || [ "$(cat "$pyenv_stamp" 2>/dev/null)" != "$want" ]; then
  echo "preparing the Python test tools in $pyenv_dir"
  rm -rf "$pyenv_dir"
  mkdir -p "$PWD/target"
  python3 -m venv "$pyenv_dir"
  "$pyenv_dir/bin/pip" install --quiet --disable-pip-version-check -r scripts/requirements.txt
  echo "$want" > "$pyenv_stamp"
fi
export ORGPLANE_TEST_PYTHON="$pyenv_dir/bin/python"
export PATH="$pyenv_dir/bin:$PATH"
