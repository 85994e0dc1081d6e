#!/usr/bin/env bash
# Builds build/ivserver_<version>_<arch>.deb with Debian's own tools, from a
# release build linked with the Swift standard library statically (the
# installed binary needs no Swift runtime), and beside it
# ivserver_<version>_<arch>.buildinfo, what a verifier needs to build it again.
#
# Reproducible: the same commit gives the same .deb, byte for byte, whatever
# folder and filesystem it is built in, and whatever the time, time zone,
# umask and locale (docs/package.md, "Checking a .deb against its commit").
# Timestamps are SOURCE_DATE_EPOCH (honoured when set; else the commit's
# time, or the changelog's in a tree without git history), the build path is
# mapped away from everything compiled, and modes, owners, member order and
# sizes depend on nothing else.
set -euo pipefail
cd "$(dirname "$0")/.."

export LC_ALL=C TZ=UTC
umask 022
if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git log -1 --format=%ct 2>/dev/null || true)
    [ -n "$SOURCE_DATE_EPOCH" ] || SOURCE_DATE_EPOCH=$(date -u -d "$(dpkg-parsechangelog -l packaging/changelog -S Date)" +%s)
fi
export SOURCE_DATE_EPOCH
# Where the tree is, as the compilers see it; mapped to one fixed path.
here=$(pwd -P)
source_map=/usr/src/ivserver
path_maps=(-Xswiftc -file-prefix-map -Xswiftc "$here=$source_map" -Xcc "-ffile-prefix-map=$here=$source_map")
# No debug information: the package strips it anyway, and with it the
# compiler's output depended on the folder (measured: the same commit built
# in two folders gave .text that differed in places).
no_debug=(-Xswiftc -gnone -Xcc -g0)

upstream=$(cat VERSION)
version="$upstream-1"
arch=$(dpkg --print-architecture)
out=build/ivserver_${version}_${arch}.deb
root=build/deb-root
scratch=.build-release

swift build -c release --static-swift-stdlib --disable-local-rpath --scratch-path "$scratch" -Xswiftc -DIVSERVER_PACKAGED "${path_maps[@]}" "${no_debug[@]}"

rm -rf "$root"
install -d -m 0755 "$root/DEBIAN" "$root/usr/bin" "$root/etc/ivserver" "$root/lib/systemd/system" \
    "$root/usr/share/man/man1" "$root/usr/share/doc/ivserver"
for tool in ivserver ivctl; do
    install -m 0755 "$scratch/release/$tool" "$root/usr/bin/$tool"
    strip --remove-section=.comment --remove-section=.note --strip-unneeded "$root/usr/bin/$tool"
    # .swift_modhash (the compiler's hashes of each module, source paths
    # included) zeroed and the build ID computed again over what is left:
    # in place, since removing either would drop the binary's RELRO.
    python3 scripts/normalize-elf.py "$root/usr/bin/$tool"
done
install -m 0644 conf/vsoc_mem.json "$root/etc/ivserver/vsoc_mem.json"
# libvirt's QEMU may map the units' shared memory (AppArmor; see postinst).
install -d -m 0755 "$root/etc/apparmor.d/abstractions"
install -m 0644 packaging/apparmor-ivserver-qemu "$root/etc/apparmor.d/abstractions/ivserver-qemu"
install -d -m 0755 "$root/etc/apparmor.d/abstractions/libvirt-qemu.d"
install -m 0644 packaging/apparmor-libvirt-qemu.d "$root/etc/apparmor.d/abstractions/libvirt-qemu.d/ivserver"
# QEMU's server's name for the multi-peer mode: the same binary.
ln -s ivserver "$root/usr/bin/ivshmem-server"
install -m 0644 packaging/ivserver.service packaging/ivserver@.service packaging/ivshmem-server@.service \
    packaging/ivserver.socket packaging/ivserver@.socket packaging/ivshmem-server@.socket "$root/lib/systemd/system/"
install -m 0644 packaging/copyright "$root/usr/share/doc/ivserver/copyright"
gzip -9n < packaging/changelog > "$root/usr/share/doc/ivserver/changelog.Debian.gz"
chmod 0644 "$root/usr/share/doc/ivserver/changelog.Debian.gz"

# The man pages come from the commands' own help (swift-argument-parser's
# generate-manual), built from the packaged binary's sources. The plugin
# builds the commands again, without the packaging flags, so it gets a
# build folder of its own: in $scratch it would overwrite the packaged
# binaries, and the next package would ship those.
manual_scratch=.build-manual
swift package --scratch-path "$manual_scratch" --allow-writing-to-package-directory generate-manual \
    --date "$(date -u -d "$(dpkg-parsechangelog -l packaging/changelog -S Date)" +%Y-%m-%d)" \
    --authors "ivserver developers" >/dev/null
# Blank lines (paragraphs of the help text) become mdoc paragraph breaks.
for page in Main/ivserver IVCtl/ivctl; do
    name=$(basename "$page")
    sed 's/^$/.Pp/' "$manual_scratch/plugins/GenerateManual/outputs/$page.1" | gzip -9n > "$root/usr/share/man/man1/$name.1.gz"
    chmod 0644 "$root/usr/share/man/man1/$name.1.gz"
done
# ivshmem-server is ivserver's multi-peer subcommand under another name.
ln -s ivserver.1.gz "$root/usr/share/man/man1/ivshmem-server.1.gz"

install -d -m 0755 "$root/usr/share/lintian/overrides"
install -m 0644 packaging/lintian-overrides "$root/usr/share/lintian/overrides/ivserver"
install -m 0755 packaging/postinst packaging/prerm packaging/postrm "$root/DEBIAN/"
install -m 0644 packaging/triggers "$root/DEBIAN/triggers"
printf '%s\n' /etc/ivserver/vsoc_mem.json /etc/apparmor.d/abstractions/ivserver-qemu \
    /etc/apparmor.d/abstractions/libvirt-qemu.d/ivserver > "$root/DEBIAN/conffiles"

# Shared-library dependencies, as dpkg-shlibdeps computes them.
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
mkdir -p "$workdir/debian"
printf 'Source: ivserver\n\nPackage: ivserver\nArchitecture: any\n' > "$workdir/debian/control"
depends=$(cd "$workdir" && dpkg-shlibdeps -O "$OLDPWD/$root/usr/bin/ivserver" "$OLDPWD/$root/usr/bin/ivctl" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')

# Installed-Size as dpkg-gencontrol counts it: each file's KiB rounded up,
# one for every other entry (not `du`, which differs by filesystem).
size=$(cd "$root" && find . -path ./DEBIAN -prune -o ! -path . -printf '%y %s\n' \
    | awk '$1 == "f" { total += int(($2 + 1023) / 1024) } $1 != "f" { total += 1 } END { print total }')
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" -e "s/@DEPENDS@/$depends/" \
    packaging/control.in > "$root/DEBIAN/control"
(cd "$root" && find . -type f ! -path './DEBIAN/*' -printf '%P\0' | sort -z | xargs -0 md5sum) > "$root/DEBIAN/md5sums"
chmod 0644 "$root/DEBIAN/control" "$root/DEBIAN/md5sums" "$root/DEBIAN/conffiles" "$root/DEBIAN/triggers"

# Modes whatever the umask was when the files were made, every timestamp
# the commit's; dpkg-deb sorts the members and dates the archive's own by
# SOURCE_DATE_EPOCH; one compressor thread, as any machine would run it.
find "$root" -type d -exec chmod 0755 {} +
find "$root" -exec touch --no-dereference --date="@$SOURCE_DATE_EPOCH" {} +
mkdir -p build
dpkg-deb --root-owner-group -Zxz --threads-max=1 --build "$root" "$out" >/dev/null
scripts/write-buildinfo.sh "$out" > "${out%.deb}.buildinfo"
echo "$out"
