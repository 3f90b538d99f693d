DROP TABLE tus_sessions;
