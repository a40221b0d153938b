#!/bin/sh
# The OMS double's console (nginx and the ghana console in the real image), one HTTP request on
# stdin/stdout (busybox `nc -ll -e`, one process per connection): GET /oms/health from the file
# start.sh keeps, and the OpenAPI (`POST /api/v2?Action=ACTION`, a JSON body) answered from the
# rm database, where OMS keeps its projects: ListProjects, DescribeProjectSteps, ListDataSource.
# While the services are not up it answers 502, as nginx does before ghana listens; with the
# knob no_openapi it answers 404 (a console older than CE 4.1.1 may not serve the OpenAPI).
. /usr/lib/oms-double/metadb.sh
read -r method target _proto
len=0
while IFS= read -r line; do
    line=$(printf '%s' "$line" | tr -d '\r')
    [ -z "$line" ] && break
    case "$line" in
        [Cc]ontent-[Ll]ength:*) len=$(printf '%s' "${line#*:}" | tr -d ' ') ;;
    esac
done
body=""
if [ "${len:-0}" -gt 0 ]; then body=$(dd bs=1 count="$len" 2>/dev/null); fi

reply() { # STATUS TEXT CONTENT-TYPE BODY
    printf 'HTTP/1.1 %s %s\r\nContent-Type: %s\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' \
        "$1" "$2" "$3" "${#4}" "$4"
    exit 0
}
num() { printf '%s' "$body" | sed -n "s/.*\"$1\" *: *\([0-9][0-9]*\).*/\1/p" | head -n 1; }
str() { printf '%s' "$body" | sed -n "s/.*\"$1\" *: *\"\([^\"]*\)\".*/\1/p" | head -n 1; }
ok() { # DATA [PAGE SIZE TOTAL]
    reply 200 OK application/json "{\"success\":true,\"errorDetail\":null,\"code\":null,\"message\":null,\"advice\":null,\"requestId\":\"$$\",\"pageNumber\":${2:-null},\"pageSize\":${3:-null},\"totalCount\":${4:-null},\"cost\":\"3 ms\",\"data\":$1}"
}
api_error() { # CODE MESSAGE
    reply 200 OK application/json "{\"success\":false,\"errorDetail\":{\"code\":\"$1\",\"message\":\"$2\"},\"code\":\"$1\",\"message\":\"$2\",\"advice\":null,\"requestId\":\"$$\",\"pageNumber\":null,\"pageSize\":null,\"totalCount\":null,\"cost\":\"1 ms\",\"data\":null}"
}
# Rows (tab-separated) as a JSON array of objects with the given keys; numbers stay numbers.
as_json() {
    awk -F '\t' -v keys="$1" 'BEGIN { n = split(keys, k, ","); printf "[" }
        { printf "%s{", (NR > 1 ? "," : "");
          for (i = 1; i <= n; i++) {
              v = $i; gsub(/\\/, "\\\\", v); gsub(/"/, "\\\"", v);
              if (k[i] ~ /^(order|progress)$/) printf "%s\"%s\":%s", (i > 1 ? "," : ""), k[i], v;
              else printf "%s\"%s\":\"%s\"", (i > 1 ? "," : ""), k[i], v }
          printf "}" }
        END { printf "]" }'
}

case "$method $target" in
    "GET /oms/health") reply 200 OK application/json "$(cat /www/oms/health)" ;;
    *" /api/v2?Action="*) action=${target#*Action=} ;;
    *) reply 404 "Not Found" text/html "<html><body>404 Not Found</body></html>" ;;
esac
if [ -f /home/ds/store/knob_no_openapi ]; then
    reply 404 "Not Found" application/json '{"status":404,"error":"Not Found","path":"/api/v2"}'
fi
if ! grep -q '"healthy":true' /www/oms/health; then
    reply 502 "Bad Gateway" text/html "<html><head><title>502 Bad Gateway</title></head><body>nginx</body></html>"
fi
[ "$method" = POST ] || reply 405 "Method Not Allowed" text/html "<html><body>405</body></html>"
page=$(num pageNumber); page=${page:-1}; [ "$page" -ge 1 ] || page=1
size=$(num pageSize); size=${size:-10}
case "$action" in
    ListProjects | ListDataSource)
        if [ "$size" -lt 1 ] || [ "$size" -gt 150 ]; then api_error CM-PARAM-INVALID "pageSize must be between 1 and 150"; fi
        skip=$(( (page - 1) * size ))
        if [ "$action" = ListProjects ]; then
            total=$($M "$rm_db" -e "SELECT COUNT(*) FROM oms_project") || api_error CM-RESOAT1111 "MetaDB error"
            rows=$($M "$rm_db" -e "SELECT id, project_name, project_type, project_status FROM oms_project ORDER BY gmt_create DESC, id DESC LIMIT $size OFFSET $skip") || api_error CM-RESOAT1111 "MetaDB error"
            data=$(printf '%s' "$rows" | as_json id,name,type,status)
        else
            total=$($M "$rm_db" -e "SELECT COUNT(*) FROM oms_data_source") || api_error CM-RESOAT1111 "MetaDB error"
            rows=$($M "$rm_db" -e "SELECT id, name, type FROM oms_data_source ORDER BY id LIMIT $size OFFSET $skip") || api_error CM-RESOAT1111 "MetaDB error"
            data=$(printf '%s' "$rows" | as_json id,name,type)
        fi
        ok "$data" "$page" "$size" "$total"
        ;;
    DescribeProjectSteps)
        id=$(str id)
        n=$($M "$rm_db" -e "SELECT COUNT(*) FROM oms_project WHERE id = '$(printf '%s' "$id" | tr -d "'\\\\")'") || api_error CM-RESOAT1111 "MetaDB error"
        [ "$n" = 1 ] || api_error CM-RESOURCE-NOT-FOUND "project $id not found"
        rows=$($M "$rm_db" -e "SELECT step_order, step_name, step_name, step_status, progress FROM oms_project_step WHERE project_id = '$id' ORDER BY step_order") || api_error CM-RESOAT1111 "MetaDB error"
        ok "$(printf '%s' "$rows" | as_json order,name,description,status,progress)"
        ;;
    *) api_error CM-ACTION-NOT-SUPPORTED "unknown action $action" ;;
esac
