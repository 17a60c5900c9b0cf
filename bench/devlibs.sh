# devlibs.sh — sourced by the bench scripts that run on a device machine: the runtime libraries
# carried in .devlibs.tar.xz (bench/device_libs.sh makes it) unpacked once a call, again only
# from a newer tarball (unpacking them under a running process that maps them kills it:
# SIGBUS), and put on LD_LIBRARY_PATH.
[ -f .devlibs.tar.xz ] && { [ ! -d .devlibs ] || [ .devlibs.tar.xz -nt .devlibs ]; } && tar xmf .devlibs.tar.xz
[ -d .devlibs ] && export LD_LIBRARY_PATH=$PWD/.devlibs${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}
