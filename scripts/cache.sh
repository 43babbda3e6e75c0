# Sourced by the setup scripts: each builds something once into the user cache, keyed by version, and links it
# from the repo root. A stamp file inside the folder marks a finished build, so a build killed half-way starts over.
#
#   build_once DEST STAMP STEP   run STEP DEST into an emptied DEST unless DEST/STAMP exists, then write the stamp
#   link_from_repo LINK TARGET   point LINK (in the repo root) at TARGET and print TARGET

CACHE="${SILVERLABEL_CACHE:-$HOME/.cache/silverlabel}"
PY="${PYTHON:-python3}"

build_once() {
  local dest="$1" stamp="$2" step="$3"
  if [ ! -f "$dest/$stamp" ]; then
    rm -rf "$dest"
    mkdir -p "$dest"
    "$step" "$dest"
    touch "$dest/$stamp"
  fi
}

link_from_repo() {
  ln -sfn "$2" "$1"
  echo "$2"
}
