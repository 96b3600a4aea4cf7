# bash completion for mailward
_mailward() {
  local cur prev cmds globals
  COMPREPLY=()
  cur=${COMP_WORDS[COMP_CWORD]}
  prev=${COMP_WORDS[COMP_CWORD-1]}
  cmds="validate plan apply confirm rollback check audit probe status explain snapshots init"
  globals="--policy --backend --state-dir --format --quiet --verbose --lock-timeout --help --version"
  case "$prev" in
    --policy|--state-dir|--config|--metrics-file) COMPREPLY=($(compgen -f -- "$cur")); return ;;
    --backend) COMPREPLY=($(compgen -W "auto nftables iptables ufw" -- "$cur")); return ;;
    --format) COMPREPLY=($(compgen -W "text json" -- "$cur")); return ;;
    --fail-on) COMPREPLY=($(compgen -W "critical high medium low info" -- "$cur")); return ;;
    audit) COMPREPLY=($(compgen -W "dovecot" -- "$cur")); return ;;
  esac
  local w cmd=""
  for w in "${COMP_WORDS[@]:1:COMP_CWORD-1}"; do
    case " $cmds " in *" $w "*) cmd=$w ;; esac
  done
  local extra=""
  case "$cmd" in
    apply) extra="--confirm --auto-confirm --force" ;;
    check) extra="--no-probe --metrics-file --fail-on" ;;
    audit) extra="--config --fix" ;;
    probe) extra="--source --timeout --deadline" ;;
    explain) extra="--from --family --iif" ;;
    rollback) extra="--to" ;;
    init) extra="--output --force" ;;
    "") COMPREPLY=($(compgen -W "$cmds $globals" -- "$cur")); return ;;
  esac
  COMPREPLY=($(compgen -W "$extra $globals" -- "$cur"))
}
complete -F _mailward mailward
