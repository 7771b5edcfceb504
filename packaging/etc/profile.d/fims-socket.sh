# Where fims_send, fims_listen and every program of cops-rs find the broker
# started by fims_server.service (/run/fims/). Without this they use the
# existing system's default, /tmp/FlexGen_FIMS_Server.socket. See
# /usr/share/doc/fims-server/systemd.md, "The socket".
if [ -z "${FIMS_SOCKET:-}" ]; then
    FIMS_SOCKET=/run/fims/FlexGen_FIMS_Server.socket
    export FIMS_SOCKET
fi
