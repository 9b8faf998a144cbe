# Shared by the example scripts: `--dry-run` prints every sercache command instead of running it.
DRY_RUN=0
_args=()
for _a in "$@"; do
  if [ "$_a" = "--dry-run" ]; then DRY_RUN=1; else _args+=("$_a"); fi
done
set -- "${_args[@]+"${_args[@]}"}"

run() {  # print the command (quoting only what needs it), then run it unless --dry-run
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$a"); else out+=("$(printf '%q' "$a")"); fi
  done
  echo "${out[*]}"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}
