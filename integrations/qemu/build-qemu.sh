#!/bin/bash
# SPDX-License-Identifier: MIT
#
# build-qemu.sh - build Debian bookworm's QEMU 7.2 with the rdm patch series.
#
#   integrations/qemu/build-qemu.sh [--stock] [WORKDIR]
#
# WORKDIR defaults to <repo>/build/qemu. Everything is cached there:
#   apt/        apt lists and archives of a private deb-src configuration
#   src/        the downloaded source package (.dsc, .orig, .debian)
#   qemu-src/   the extracted Debian tree (Debian's patches applied), a git
#               repository whose branch "rdm" is "debian" plus our series
#   rdm-build/, rdm-prefix/   librdm from this tree, installed into a prefix
#   build/      QEMU's build directory
#   qemu-system-x86_64        link to the built binary
# A second run fetches nothing and rebuilds only what changed: the series is
# reapplied only when a patch changed (in a scratch worktree; the build tree
# then moves to the result and only the files that differ get new mtimes),
# librdm and QEMU go through their own incremental builds.
#
# --stock builds the same tree without the series into build-stock/ (the
# reference variant of the tests), with qemu-system-x86_64-stock next to it.
#
# The machine's apt configuration is not changed: the deb-src entry lives in
# a temporary sources file passed with -o Dir::Etc::sourcelist, and apt's
# lists and archives go to WORKDIR/apt.
#
# The built binary needs its firmware paths:
#   qemu-system-x86_64 -L /usr/share/seabios -L /usr/share/qemu ...
set -euo pipefail

QEMU_VERSION='1:7.2+dfsg-7+deb12u18'
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
JOBS=${JOBS:-2}

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)

variant=rdm
if [ "${1:-}" = --stock ]; then
	variant=stock
	shift
fi
work=${1:-$root/build/qemu}
mkdir -p "$work"
work=$(cd "$work" && pwd)

log() { printf 'build-qemu: %s\n' "$*" >&2; }

# ------------------------------------------------------------ build deps
need=()
for p in libglib2.0-dev libpixman-1-dev ninja-build meson pkg-config python3 \
	 dpkg-dev git xz-utils; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed' ||
		need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
	log "installing ${need[*]}"
	if [ "$(id -u)" -eq 0 ]; then
		DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2
	else
		sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >&2
	fi
fi

# ------------------------------------------------------------ source
srcpkg=$work/src
tree=$work/qemu-src
dsc=$srcpkg/qemu_${QEMU_VERSION#*:}.dsc
if [ ! -f "$dsc" ]; then
	log "fetching qemu $QEMU_VERSION source"
	mkdir -p "$work/apt/lists/partial" "$work/apt/archives/partial" "$srcpkg"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	echo "deb-src $DEBIAN_MIRROR bookworm main" >"$tmp/sources.list"
	apt_opts=(-o "Dir::Etc::sourcelist=$tmp/sources.list" -o Dir::Etc::sourceparts=-
		  -o "Dir::State::Lists=$work/apt/lists" -o "Dir::Cache=$work/apt"
		  -o "Dir::Cache::archives=$work/apt/archives" -o APT::Sandbox::User=root)
	apt-get "${apt_opts[@]}" -qq update >&2
	(cd "$srcpkg" && apt-get "${apt_opts[@]}" -qq source --download-only "qemu=$QEMU_VERSION" >&2)
	rm -rf "$tmp"
	trap - EXIT
fi

gitq() { git -C "$tree" -c user.name=build-qemu -c user.email=build-qemu@localhost \
	 -c core.autocrlf=false "$@"; }

if [ ! -d "$tree/.git" ]; then
	log "extracting the source tree"
	rm -rf "$tree"
	dpkg-source -x "$dsc" "$tree" >&2
	# .pc/ is quilt's bookkeeping of Debian's own patches, not source.
	rm -rf "$tree/.pc"
	# dpkg-source leaves a copy of the upstream tarball next to the tree.
	rm -f "$work"/qemu_*.orig.tar.*
	gitq init -q -b debian
	gitq add -A -f .
	gitq commit -q -m "qemu $QEMU_VERSION (Debian source, Debian patches applied)"
fi

# ------------------------------------------------------------ patches
series_id() {
	cat "$here"/patches/*.patch 2>/dev/null | sha256sum | cut -c1-16
}
want_ref=debian
if [ "$variant" = rdm ] && ! compgen -G "$here/patches/*.patch" >/dev/null; then
	log "no patches in $here/patches"
	exit 1
fi
if [ "$variant" = rdm ]; then
	want_ref=rdm-$(series_id)
	if ! gitq rev-parse -q --verify "refs/heads/$want_ref" >/dev/null; then
		log "applying the patch series ($want_ref)"
		# In a scratch worktree, so that the build tree only ever moves
		# from one patched state to the next (below) and keeps the
		# mtimes of every file the change does not touch.
		scratch=$work/qemu-src-am
		rm -rf "$scratch"
		gitq worktree prune
		gitq worktree add -q --detach "$scratch" debian
		if ! git -C "$scratch" -c user.name=build-qemu -c user.email=build-qemu@localhost \
			am -q --whitespace=nowarn "$here"/patches/*.patch; then
			gitq worktree remove --force "$scratch"
			log "the patch series does not apply"
			exit 1
		fi
		gitq branch -f "$want_ref" "$(git -C "$scratch" rev-parse HEAD)"
		gitq worktree remove --force "$scratch"
	fi
fi
if [ "$variant" = rdm ]; then
	if [ "$(gitq rev-parse HEAD)" != "$(gitq rev-parse "$want_ref")" ]; then
		# Moving between versions of the series rewrites only the files
		# that differ, so only they get new mtimes and are rebuilt.
		gitq checkout -q -f "$want_ref"
	fi
else
	# The stock variant has its own checkout, so building one variant
	# never touches the other's files.
	if [ ! -d "$work/qemu-src-stock" ]; then
		gitq worktree add -q --detach "$work/qemu-src-stock" debian
	fi
	tree=$work/qemu-src-stock
fi

# ------------------------------------------------------------ librdm
configure_extra=()
if [ "$variant" = rdm ]; then
	rdmb=$work/rdm-build
	prefix=$work/rdm-prefix
	if [ ! -f "$rdmb/build.ninja" ]; then
		log "configuring librdm"
		meson setup "$rdmb" "$root" --prefix "$prefix" --libdir lib \
			-Dvm_tests=disabled -Dfuzz=disabled -Ddpdk=disabled >&2
	fi
	log "building librdm"
	nice ninja -C "$rdmb" -j"$JOBS" >&2
	meson install -C "$rdmb" --no-rebuild --quiet >&2
	export PKG_CONFIG_PATH=$prefix/lib/pkgconfig${PKG_CONFIG_PATH:+:$PKG_CONFIG_PATH}
	# librdm.so is found at run time through the binary's rpath.
	configure_extra=(--enable-rdm "--extra-ldflags=-Wl,-rpath,$prefix/lib")
	qbuild=$work/build
	link=$work/qemu-system-x86_64
else
	qbuild=$work/build-stock
	link=$work/qemu-system-x86_64-stock
fi

# ------------------------------------------------------------ QEMU
configure_args=(--target-list=x86_64-softmmu --without-default-features --enable-tcg
		--enable-kvm --disable-docs --disable-werror --disable-tools
		--disable-guest-agent "${configure_extra[@]}")
if [ ! -f "$qbuild/build.ninja" ] ||
   [ "$(cat "$qbuild/.build-qemu-args" 2>/dev/null)" != "${configure_args[*]}" ]; then
	log "configuring QEMU ($variant)"
	mkdir -p "$qbuild"
	(cd "$qbuild" && nice "$tree/configure" "${configure_args[@]}" >&2)
	printf '%s' "${configure_args[*]}" >"$qbuild/.build-qemu-args"
fi
log "building QEMU ($variant)"
nice ninja -C "$qbuild" -j"$JOBS" qemu-system-x86_64 >&2
ln -sfn "$qbuild/qemu-system-x86_64" "$link"
log "built $link"
echo "$link"
