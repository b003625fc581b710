# grubenv_set FILE NAME=VALUE... — rewrites a GRUB environment block the way
# grub-editenv does (header, NAME=VALUE lines, '#' padding to 1024 bytes), via a
# temporary file and rename so a power cut leaves the old or the new block.
grubenv_set() {
  f=$1; shift
  tmp=$f.new
  {
    echo '# GRUB Environment Block'
    grep -v '^#' "$f" | while IFS= read -r line; do
      keep=1
      for kv in "$@"; do [ "${line%%=*}" = "${kv%%=*}" ] && keep=0; done
      [ $keep = 1 ] && [ -n "$line" ] && echo "$line"
    done
    for kv in "$@"; do echo "$kv"; done
  } >"$tmp.body"
  size=$(wc -c <"$tmp.body")
  [ "$size" -le 1024 ] || { echo "grubenv_set: block too large" >&2; rm -f "$tmp.body"; return 1; }
  { cat "$tmp.body"; head -c $((1024 - size)) /dev/zero | tr '\0' '#'; } >"$tmp"
  rm -f "$tmp.body"
  sync "$tmp" 2>/dev/null || sync
  mv "$tmp" "$f" && sync
}
