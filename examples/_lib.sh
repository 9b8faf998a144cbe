# Shared by the example scripts: `--dry-run` prints every sercache command instead of running it.
DRY_RUN=0
_args=()
for _a in "$@"; do
  if [ "$_a" = "--dry-run" ]; then DRY_RUN=1; else _args+=("$_a"); fi
done
set -- "${_args[@]+"${_args[@]}"}"
# --dry-run needs no corpus: the commands are printed with a placeholder root
if [ "$DRY_RUN" = 1 ] && [ $# -eq 0 ]; then set -- CORPUS_ROOT CACHE_DIR; fi
# Models: Hugging Face ids or local folders (a cluster without internet); override through the environment,
# e.g. SSL_MODEL=/models/hubert-large-ls960-ft bash examples/loso_all_heads.sh ...
SSL_MODEL=${SSL_MODEL:-facebook/hubert-large-ls960-ft}
ASR_MODEL=${ASR_MODEL:-facebook/wav2vec2-large-960h}
TEXT_MODEL=${TEXT_MODEL:-bert-base-uncased}
MODELS=(--ssl-model "$SSL_MODEL" --asr-model "$ASR_MODEL" --text-model "$TEXT_MODEL")

run() {  # print the command (quoting only what needs it), then run it unless --dry-run
  local out=() a
  for a in "$@"; do
    if [[ "$a" =~ ^[A-Za-z0-9_./:=,@%+-]+$ ]]; then out+=("$a"); else out+=("$(printf '%q' "$a")"); fi
  done
  echo "${out[*]}"
  if [ "$DRY_RUN" = 0 ]; then "$@"; fi
}
