# Fixtures for tests that need real servers; included from tests/CMakeLists.txt.
#
#   linktr_stack  the whole local stack (PostgreSQL, the embedded broker or
#                 $KAFKA_BOOTSTRAP, the four services from ${CMAKE_BINARY_DIR}/bin)
#                 on free ports, fresh state each ctest run. Tests get the
#                 path of its stack.env in LINKTR_STACK_ENV_FILE.
#   postgres      a throwaway PostgreSQL with the linktr database, roles and
#                 schemas, fresh each ctest run. Tests get the path of its
#                 pg.env in LINKTR_PG_ENV_FILE.
#
# The cleanup tests (stack_stop, pg_stop) run even when tests fail. The env
# files are KEY=VALUE lines; see deploy/local/stack and deploy/local/pg.

set(LINKTR_STACK_SCRIPT ${PROJECT_SOURCE_DIR}/deploy/local/stack)
set(LINKTR_PG_SCRIPT ${PROJECT_SOURCE_DIR}/deploy/local/pg)

set(LINKTR_STACK_RUN_DIR ${CMAKE_BINARY_DIR}/itest-run)
set(LINKTR_STACK_ENV_FILE ${LINKTR_STACK_RUN_DIR}/stack.env)
set(LINKTR_PG_DIR ${CMAKE_BINARY_DIR}/utest-pg)
set(LINKTR_PG_ENV_FILE ${LINKTR_PG_DIR}/pg.env)

# Ready means /readyz: each service can answer (database reachable; the
# mailer's consumer connected). Consumers start from the earliest offset, so
# an event sent before referral's consumer joined is still handled.
# Every test client comes from 127.0.0.1, so the per-IP limits are off
# here; the gateway's own tests check them against a gateway they start.
# The fault and scale-out tests refer 200 users from one referrer, past
# the default daily cap (the cap itself is tested in unit.referral); the
# expiry test needs the sweep to run every second, not every minute; the
# leaderboard test needs its cache refreshed every second, not every 30.
set(_linktr_test_env
  LINKTR_BUILD_DIR=${CMAKE_BINARY_DIR}
  LINKTR_READY_PATH=/readyz
  RATE_LIMITS=off
  REFERRAL_DAILY_CAP=1000
  REFERRAL_SWEEP_INTERVAL_S=1
  REFERRAL_LEADERBOARD_REFRESH_S=1)
set(_linktr_stack_env LINKTR_RUN_DIR=${LINKTR_STACK_RUN_DIR} ${_linktr_test_env})

add_test(NAME stack_start
  COMMAND ${LINKTR_STACK_SCRIPT} start --free-ports --clean)
set_tests_properties(stack_start PROPERTIES
  FIXTURES_SETUP linktr_stack
  ENVIRONMENT "${_linktr_stack_env}"
  TIMEOUT 180
  LABELS integration)

add_test(NAME stack_stop COMMAND ${LINKTR_STACK_SCRIPT} stop)
set_tests_properties(stack_stop PROPERTIES
  FIXTURES_CLEANUP linktr_stack
  ENVIRONMENT "${_linktr_stack_env}"
  TIMEOUT 120
  LABELS integration)

# linktr_replicas: a second stack with two instances of auth, referral and
# mailer (the gateway round-robins over them), for the scale-out tests
# (tests/integration/test_replicas*.c). Its mailers send over real SMTP, to
# deploy/local/smtp-catcher (aiosmtpd), which the tests stop and restart.
set(LINKTR_REPLICAS_RUN_DIR ${CMAKE_BINARY_DIR}/replicas-run)
set(LINKTR_REPLICAS_ENV_FILE ${LINKTR_REPLICAS_RUN_DIR}/stack.env)
set(_linktr_replicas_env LINKTR_RUN_DIR=${LINKTR_REPLICAS_RUN_DIR} ${_linktr_test_env}
  LINKTR_REPLICAS=auth=2,referral=2,mailer=2 LINKTR_SMTP_CATCHER=1)

add_test(NAME replicas_start
  COMMAND ${LINKTR_STACK_SCRIPT} start --free-ports --clean)
set_tests_properties(replicas_start PROPERTIES
  FIXTURES_SETUP linktr_replicas
  ENVIRONMENT "${_linktr_replicas_env}"
  TIMEOUT 180
  LABELS integration)

add_test(NAME replicas_stop COMMAND ${LINKTR_STACK_SCRIPT} stop)
set_tests_properties(replicas_stop PROPERTIES
  FIXTURES_CLEANUP linktr_replicas
  ENVIRONMENT "${_linktr_replicas_env}"
  TIMEOUT 120
  LABELS integration)

# Ctrl-C of `stack run` leaves no process behind. Its own run dir and free
# ports, so it could share the machine with the fixture; RUN_SERIAL keeps
# the 2-core machine from being overloaded while it measures.
add_test(NAME stack_ctrl_c_leaves_nothing
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/test_stack_stop.sh)
set_tests_properties(stack_ctrl_c_leaves_nothing PROPERTIES
  ENVIRONMENT "LINKTR_RUN_DIR=${CMAKE_BINARY_DIR}/ctrlc-run;LINKTR_BUILD_DIR=${CMAKE_BINARY_DIR}"
  RUN_SERIAL TRUE
  TIMEOUT 240
  LABELS integration)

# A port taken between choosing it and binding it: start --free-ports chooses
# again (forced through the script's test seam; own run dir and free ports).
add_test(NAME stack_port_race_chooses_again
  COMMAND ${CMAKE_CURRENT_LIST_DIR}/test_stack_port_race.sh)
set_tests_properties(stack_port_race_chooses_again PROPERTIES
  ENVIRONMENT "LINKTR_RUN_DIR=${CMAKE_BINARY_DIR}/portrace-run;LINKTR_BUILD_DIR=${CMAKE_BINARY_DIR}"
  RUN_SERIAL TRUE
  TIMEOUT 240
  LABELS integration)

add_test(NAME pg_start COMMAND ${LINKTR_PG_SCRIPT} start --fresh ${LINKTR_PG_DIR})
set_tests_properties(pg_start PROPERTIES
  FIXTURES_SETUP postgres
  TIMEOUT 120
  LABELS unit)

add_test(NAME pg_stop COMMAND ${LINKTR_PG_SCRIPT} stop ${LINKTR_PG_DIR})
set_tests_properties(pg_stop PROPERTIES
  FIXTURES_CLEANUP postgres
  TIMEOUT 120
  LABELS unit)

unset(_linktr_stack_env)
unset(_linktr_replicas_env)
unset(_linktr_test_env)
