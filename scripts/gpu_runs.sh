# Run specs of scripts/train_prior_gpu.sh: "LATENTS[@key=value@key=value...]", a latent folder
# with the run's own trainer overrides. Sourced by that script; tests/test_gpu_runs.py checks it.

# "folder@k=v@k2=v2" -> "folder-k-v-k2-v2" (letters, digits, ".", "_", "-": a file name $OUT can return)
name() { local base; base=$(basename "${1%%@*}"); [[ $1 == *@* ]] && base+="-${1#*@}"; echo "${base//[^A-Za-z0-9._-]/-}"; }
# the latent folder of a run spec
folder() { echo "${1%%@*}"; }
# the run's own overrides as --set arguments, one word per line
# (split by read, not by an unquoted expansion: "[1,[2,6,2],1]" must not be taken for a file pattern)
own_sets() {
    [[ $1 == *@* ]] || return 0
    local kv parts
    IFS=@ read -ra parts <<< "${1#*@}"
    for kv in "${parts[@]}"; do printf -- '--set\n%s\n' "$kv"; done
}
# the comma-separated run specs of the script's first argument, one per line; a comma inside
# brackets belongs to a value ("a,b@model.depth=[1,[2,10,2],1]" is two runs, not four)
run_specs() {
    local spec="" depth=0 c i
    for (( i = 0; i < ${#1}; i++ )); do
        c=${1:i:1}
        case $c in
            "[") depth=$((depth + 1)) ;;
            "]") depth=$((depth - 1)) ;;
            ",") if (( depth == 0 )); then printf '%s\n' "$spec"; spec=""; continue; fi ;;
        esac
        spec+=$c
    done
    printf '%s\n' "$spec"
}

# room_for OUT FOLDER: whether FOLDER's files can join OUT's and still come back from a call
# (8 files, 64 MiB in all), 1 MiB kept for the log that the call's tee is still writing
room_for() {
    local files bytes
    files=$(find "$1" "$2" -type f | wc -l)
    bytes=$(find "$1" "$2" -type f -printf '%s\n' | awk '{ s += $1 } END { print s + 0 }')
    (( files <= 8 && bytes + 1048576 <= 64 * 1048576 ))
}
