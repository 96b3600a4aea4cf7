# bash completion for mailward(8)                                   -*- shell-script -*-
#
# Commands, their options, and the values of options: file names after --policy and the other
# path options (-o filenames, so directories get their slash), directories after --state-dir,
# the choices of --format/--backend/--fail-on/--engine/--family, seconds after --confirm,
# --timeout, --deadline and --lock-timeout, this host's addresses after --source, interfaces
# after --iif, snapshot IDs after rollback --to. Works with or without the bash-completion
# package (no _init_completion), and with --option=value.

# The snapshot IDs in the state directory given on the command line (or the default), readable
# only by root: nothing otherwise.
_mailward_snapshot_ids() {
  local dir=/var/lib/mailward i f
  for ((i = 1; i < COMP_CWORD; i++)); do
    [[ ${COMP_WORDS[i]} == --state-dir && -n ${COMP_WORDS[i + 1]} ]] && dir=${COMP_WORDS[i + 1]}
  done
  for f in "$dir"/snapshots/*.snap; do
    [[ -e $f ]] || continue
    f=${f##*/}
    f=${f%.snap}
    [[ $f =~ ^[0-9]+$ ]] || continue
    while [[ $f == 0?* ]]; do f=${f#0}; done  # 00000000000000000007.snap is ID 7
    printf '%s\n' "$f"
  done 2>/dev/null
}

# This host's addresses, IPv4 and IPv6, without prefix lengths.
_mailward_local_addresses() {
  ip -o addr show 2>/dev/null | while read -r _ _ family addr _; do
    case $family in inet | inet6) printf '%s\n' "${addr%/*}" ;; esac
  done
}

_mailward_files() {
  compopt -o filenames 2>/dev/null
  COMPREPLY=($(compgen -f -- "$1"))
}

_mailward() {
  local cur prev
  COMPREPLY=()
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD - 1]}
  # --option=value: bash splits it at '=' (COMP_WORDBREAKS).
  if [[ $cur == = ]]; then
    cur=""
  elif [[ $prev == = && $COMP_CWORD -ge 2 ]]; then
    prev=${COMP_WORDS[COMP_CWORD - 2]}
  fi

  local cmds="validate plan apply confirm check status explain snapshots rollback remove init audit probe"
  local globals="--policy --backend --state-dir --format --quiet -q --verbose -v --lock-timeout --help --version"
  # Options followed by a value, so that a value is never taken for a command.
  local takes_value="--policy --backend --state-dir --format --lock-timeout --confirm --metrics-file --fail-on
    --to --output -o --config --engine --source --timeout --deadline --from --family --iif"

  case $prev in
    --policy | --metrics-file | --config | --output | -o)
      _mailward_files "$cur"; return ;;
    --state-dir)
      compopt -o filenames 2>/dev/null
      COMPREPLY=($(compgen -d -- "$cur")); return ;;
    --backend) COMPREPLY=($(compgen -W "auto nftables iptables ufw" -- "$cur")); return ;;
    --format) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
    --fail-on) COMPREPLY=($(compgen -W "critical high medium low info" -- "$cur")); return ;;
    --engine) COMPREPLY=($(compgen -W "auto doveconf builtin" -- "$cur")); return ;;
    --family) COMPREPLY=($(compgen -W "ipv4 ipv6" -- "$cur")); return ;;
    --confirm) COMPREPLY=($(compgen -W "60 120 300 600" -- "$cur")); return ;;
    --lock-timeout) COMPREPLY=($(compgen -W "0 60 120 300" -- "$cur")); return ;;
    --timeout) COMPREPLY=($(compgen -W "1 3 5 10" -- "$cur")); return ;;
    --deadline) COMPREPLY=($(compgen -W "15 30 60 120" -- "$cur")); return ;;
    --source) COMPREPLY=($(compgen -W "$(_mailward_local_addresses)" -- "$cur")); return ;;
    --iif) COMPREPLY=($(compgen -W "$(ls /sys/class/net 2>/dev/null)" -- "$cur")); return ;;
    --to) COMPREPLY=($(compgen -W "$(_mailward_snapshot_ids)" -- "$cur")); return ;;
    --from) return ;;  # any address
  esac

  # The command (and audit's sub-command) among the words before the cursor.
  local i w cmd="" sub="" skip=""
  for ((i = 1; i < COMP_CWORD; i++)); do
    w=${COMP_WORDS[i]}
    if [[ -n $skip ]]; then
      skip=""
      [[ $w == = ]] && skip=1  # --option = value
      continue
    fi
    case " $takes_value " in *[[:space:]]"$w"[[:space:]]*) skip=1; continue ;; esac
    [[ $w == -* ]] && continue
    if [[ -z $cmd ]]; then
      case " $cmds " in *" $w "*) cmd=$w ;; esac
    elif [[ $cmd == audit && -z $sub ]]; then
      sub=$w
    fi
  done

  local opts=""
  case $cmd in
    "") COMPREPLY=($(compgen -W "$cmds $globals" -- "$cur")); return ;;
    apply) opts="--confirm --auto-confirm --force --no-probe" ;;
    check) opts="--no-probe --metrics-file --fail-on" ;;
    rollback) opts="--to --dry-run" ;;
    remove) opts="--dry-run" ;;
    init) opts="--output -o --force" ;;
    explain)
      opts="--from --family --iif"
      [[ $cur != -* ]] && { COMPREPLY=($(compgen -W "25 110 143 465 587 993 995 4190" -- "$cur")); return; }
      ;;
    probe)
      opts="--source --timeout --deadline"
      [[ $cur != -* ]] && { COMPREPLY=($(compgen -A hostname -- "$cur")); return; }
      ;;
    audit)
      if [[ -z $sub ]]; then
        COMPREPLY=($(compgen -W "dovecot" -- "$cur")); return
      fi
      opts="--config --engine --fix"
      ;;
  esac
  COMPREPLY=($(compgen -W "$opts $globals" -- "$cur"))
}
complete -F _mailward mailward
