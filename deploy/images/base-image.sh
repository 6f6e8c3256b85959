#!/bin/sh
# Base images from Debian's packages, for hosts that cannot pull python:3.11-slim (air-gapped
# sites, CI here): base-image.sh NAME:TAG PACKAGE,PACKAGE,... [REMOVE,REMOVE,...]
# mmdebstrap builds a minimal bookworm root filesystem with the packages, `docker import` makes
# it an image. The tarball is cached under $ZOO_CACHE/base by a hash of the package list, so a
# second run only imports it (seconds); delete the cache to pick up Debian's security updates.
# Documentation and translations are left out (the copyright files stay), and so is usrmerge
# (/usr is merged already: usr-is-merged says so), and the packages named in REMOVE.
set -eu
image=$1 packages=$2 remove=$(echo "${3:-}" | tr , ' ')
cache=${ZOO_CACHE:-/var/cache/keras-zoo}/base
key=$(printf '%s\n' "bookworm minbase $packages -$remove" | cat - "$0" | sha256sum | cut -c1-16)
tarball=$cache/$key.tar
mkdir -p "$cache"
if [ ! -s "$tarball" ]; then
  mmdebstrap --quiet --format=tar --variant=minbase --include="$packages" \
    --customize-hook="chroot \"\$1\" sh -c 'apt-get install -y -qq usr-is-merged >/dev/null && apt-get purge -y -qq usrmerge $remove >/dev/null && apt-get autoremove -y -qq --purge >/dev/null'" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin "$1"/usr/share/man "$1"/usr/share/info "$1"/usr/share/locale/*' \
    --customize-hook='find "$1"/usr/share/doc -type f ! -name copyright -delete' \
    bookworm "$tarball.part"
  mv "$tarball.part" "$tarball"
fi
${DOCKER:-docker} import --change 'CMD ["/bin/bash"]' \
  --change 'ENV LANG=C.UTF-8 PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "$tarball" "$image" >/dev/null
echo "$image <- $tarball ($(du -h "$tarball" | cut -f1), packages $packages)"
