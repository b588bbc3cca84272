# Sourced by the scripts/bench-*.sh that run corten-bench: builds `corten` and `corten-bench`
# in the profile PROFILE names (release by default; `dev` for the dev profile) and sets `dir`
# to where they are.
target=${CARGO_TARGET_DIR:-target}
if [ "${PROFILE:-release}" = release ]; then
  cargo build --release --locked -p corten -p bench
  dir=$target/release
else
  cargo build --locked -p corten -p bench
  dir=$target/debug
fi
